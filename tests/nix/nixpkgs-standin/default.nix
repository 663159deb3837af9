# `import nixpkgs { system; config; }` for the stand-in: a package set in which every package is
# a tiny derivation (never built) carrying meta.license, so an unfree package is refused unless
# config allows it, as nixpkgs does. Names not listed here fail evaluation: that catches typos.
#
# It mirrors the attribute layout of the pinned nixpkgs (nixos-unstable c59305bab206, 2026-10-01;
# docs/targets.md says how it was chosen), read from these nixpkgs files (NixOS/nixpkgs as stored
# by the search tool; commits named where the tool named them):
#   - default.nix + lib/minfeatures.nix: Nix older than 2.18 is refused before anything else;
#   - pkgs/top-level/cuda-packages.nix: cudaPackages_12_6, 12_8, 12_9, 13_0 .. 13_4, each built by
#     pkgs/development/cuda-modules from NVIDIA's redistributable manifests (split packages:
#     cuda_nvcc, cuda_cudart, cuda_cccl, cuda_crt, libcublas, cudnn, libcusparse_lt, ...), with
#     cudatoolkit still there (doc/languages-frameworks/cuda.section.md: deprecated, "All new
#     projects should use the CUDA redistributables");
#   - pkgs/development/cuda-modules/_cuda/lib/cuda.nix (commit 1991f5692977):
#     _cuda.lib.allowUnfreeCudaPredicate, free licences or NVIDIA's, compound licences included
#     (NixOS/nixpkgs#550208); lib/licenses/{licenses,operators}.nix: nvidiaCudaRedist's shortName
#     "CUDA EULA", and compound licences { licenseType = "compound"; operator; licenses; };
#   - config may be a function of { pkgs } (how the nixpkgs CUDA docs pass the predicate since
#     NixOS/nixpkgs#437723);
#   - pkgs/by-name: libsm, libxext, libxrender, libx11, libxcb, libglvnd, glib, openblas, cacert,
#     nixfmt (pkgs/by-name/ni/nixfmt/package.nix, the RFC-style formatter);
#   - pkgs/build-support/trivial-builders/default.nix: runCommand name env script, writeScript,
#     writeShellScriptBin; pkgs/build-support/fetchurl/default.nix: fetchurl { url; sha256; name; }
#     (a fixed-output derivation); runtimeShell (a bash);
#   - lib/systems/flake-systems.nix: aarch64-darwin and x86_64-darwin beside the Linux systems.
{ system, config ? { } }:
let
  lib = import ./lib.nix;
  requiredNix = "2.18";
  systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" "x86_64-darwin" ];
  cfg = if builtins.isFunction config then config { pkgs = self; } else config;
  knownConfig = [ "allowUnfree" "allowUnfreePredicate" "cudaSupport" "cudaCapabilities" ];
  unknownConfig = builtins.filter (k: !builtins.elem k knownConfig) (builtins.attrNames cfg);

  licenses = {
    mit = { shortName = "mit"; free = true; licenseType = "simple"; };
    # lib/licenses/licenses.nix
    nvidiaCudaRedist = { shortName = "CUDA EULA"; free = false; licenseType = "simple"; };
    # the NVIDIA licences of pkgs/development/cuda-modules/_cuda/lib (cuDNN, cuSPARSELt, TensorRT)
    nvidiaCudnn = { shortName = "cuDNN EULA"; free = false; licenseType = "simple"; };
    nvidiaCusparse_lt = { shortName = "cuSPARSELt EULA"; free = false; licenseType = "simple"; };
    nvidiaTensorrt = { shortName = "TensorRT EULA"; free = false; licenseType = "simple"; };
    unfreeRedistributable = { shortName = "unfreeRedistributable"; free = false; licenseType = "simple"; };
    OR = ls: { licenseType = "compound"; operator = "OR"; licenses = ls; };
    AND = ls: { licenseType = "compound"; operator = "AND"; licenses = ls; };
  };
  cudaLicenses = with licenses; [ nvidiaCudaRedist nvidiaCudnn nvidiaCusparse_lt nvidiaTensorrt ];

  # lib.licenses.evaluateProperty, permissive: OR needs one, AND needs all.
  evaluate = f: l:
    if (l.licenseType or "simple") == "compound" then
      (if l.operator == "OR" then builtins.any else builtins.all) (evaluate f) l.licenses
    else f l;
  isCompound = l: builtins.isAttrs l && (l.licenseType or "simple") == "compound";
  # _cuda.lib.allowUnfreeCudaPredicate
  allowUnfreeCudaPredicate = package:
    let l = package.meta.license; in
    if isCompound l then evaluate (x: x.free || builtins.elem x cudaLicenses) l
    else builtins.all (x: x.free || builtins.elem (x.shortName or null) (map (c: c.shortName) cudaLicenses))
      (lib.toList l);

  isFree = l: if isCompound l then evaluate (x: x.free) l else builtins.all (x: x.free) (lib.toList l);
  allowed = pkg:
    isFree pkg.meta.license
    || cfg.allowUnfree or false
    || (cfg ? allowUnfreePredicate && cfg.allowUnfreePredicate pkg);

  package = { name, license ? licenses.mit, outputs ? [ "out" ] }:
    let
      drv = derivation {
        inherit name system outputs;
        builder = "/bin/sh";
        args = [ "-c" "for o in $outputs; do echo stand-in > \"\${!o}\"; done" ];
      };
      pkg = drv // { pname = name; meta = { inherit license; }; };
    in
    if allowed pkg then pkg
    else throw "Package '${name}' has an unfree license, refusing to evaluate.";

  named = names: lib.genAttrs names (name: package { inherit name; });

  # Python interpreters for every Python minor the compatibility table knows (3.7 to 3.15).
  pythons = lib.genAttrs (map (m: "python3${toString m}") (builtins.genList (i: i + 7) 9))
    (name: package { inherit name; });

  cudaPackageSet = v:
    let
      version = builtins.replaceStrings [ "_" ] [ "." ] v;
      redist = name: package { name = "cuda${version}-${name}"; license = licenses.nvidiaCudaRedist; outputs = [ "out" "lib" ]; };
      split = lib.genAttrs [
        "cuda_cccl" "cuda_crt" "cuda_cudart" "cuda_cupti" "cuda_nvcc" "cuda_nvrtc" "cuda_nvtx"
        "libcublas" "libcufft" "libcurand" "libcusolver" "libcusparse" "libnvjitlink"
      ] redist;
    in
    split // {
      cudnn = package { name = "cuda${version}-cudnn"; license = licenses.nvidiaCudnn; outputs = [ "out" "lib" ]; };
      libcusparse_lt = package { name = "cuda${version}-libcusparse_lt"; license = licenses.nvidiaCusparse_lt; };
      tensorrt = package { name = "cuda${version}-tensorrt"; license = licenses.nvidiaTensorrt; };
      # the deprecated toolkit (cuda.section.md); generated flakes no longer use it
      cudatoolkit = package { name = "cuda-merged-${version}"; license = licenses.nvidiaCudaRedist; };
      cudaMajorMinorVersion = version;
    };
  # The cudaPackages_X_Y of pkgs/top-level/cuda-packages.nix (the newest version read also has
  # 13_4, which orchestrator/data/compat.toml does not know yet); older ones are gone from nixpkgs
  # (aliases that throw).
  cudaPresent = [ "12_6" "12_8" "12_9" "13_0" "13_1" "13_2" "13_3" ];
  cudaRemoved = [ "11_7" "11_8" "12_0" "12_1" "12_2" "12_3" "12_4" "12_5" ];
  cuda =
    builtins.listToAttrs (map (v: { name = "cudaPackages_${v}"; value = cudaPackageSet v; }) cudaPresent)
    // builtins.listToAttrs (map (v: {
      name = "cudaPackages_${v}";
      value = throw "cudaPackages_${v} has been removed from Nixpkgs";
    }) cudaRemoved);

  mkShell = { name ? "nix-shell", packages ? [ ], shellHook ? "", ... }@args:
    let
      bad = builtins.filter (p: (p.type or null) != "derivation") packages;
    in
    if !builtins.isString shellHook then throw "mkShell: shellHook must be a string"
    else if bad != [ ] then throw "mkShell: packages holds something that is not a derivation"
    else derivation (builtins.removeAttrs args [ "packages" ] // {
      inherit name system shellHook;
      nativeBuildInputs = packages;
      builder = "/bin/sh";
      args = [ "-c" "echo stand-in > $out" ];
    });

  # trivial builders and fetchurl: derivations never built here (a structural check)
  runCommand = name: env: script: derivation (env // {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" script ];
  });
  writeScript = name: text: runCommand name { inherit text; } "echo \"$text\" > $out";
  writeShellScriptBin = name: text: runCommand name { inherit text; } "mkdir -p $out/bin";
  fetchurl = { url, sha256, name ? baseNameOf url }: derivation {
    inherit name system url;
    builder = "/bin/sh";
    args = [ "-c" "exit 1" ];
    outputHashMode = "flat";
    outputHashAlgo = "sha256";
    outputHash = sha256;
  };

  self = pythons // cuda // named [
    # system packages: every nixpkgs attribute of orchestrator/data/system_packages.toml, and a
    # few more the tests' specs use
    "cacert" "cmake" "curl" "gcc" "git" "git-lfs" "gnumake" "htop" "jq" "ninja"
    "openssh" "pkg-config" "ripgrep" "tmux" "unzip" "uv" "vim" "wget" "nixfmt"
  ] // lib.genAttrs [
    "ffmpeg" "glib" "libglvnd" "libsm" "libsndfile" "libx11" "libxcb" "libxext" "libxrender" "openblas"
    "openssl" "zlib"
  ] (name: package { inherit name; outputs = [ "out" "lib" ]; }) // {
    inherit lib mkShell runCommand writeScript writeShellScriptBin fetchurl;
    runtimeShell = "/bin/bash";
    config = cfg;
    _cuda.lib = { inherit allowUnfreeCudaPredicate; };
    stdenv.cc.cc = package { name = "gcc-unwrapped"; outputs = [ "out" "lib" ]; };
    # unfree and not CUDA: a flake that allows it has an unfree predicate that is too wide
    unrar = package { name = "unrar"; license = licenses.unfreeRedistributable; };
    # a compound licence with a CUDA part (a test fixture, not a nixpkgs package): the predicate
    # must accept it, as nixpkgs' does since NixOS/nixpkgs#550208
    envparity-compound-licence = package {
      name = "envparity-compound-licence";
      license = licenses.OR [ licenses.nvidiaCudaRedist licenses.unfreeRedistributable ];
    };
  };
in
if !(builtins ? nixVersion) || builtins.compareVersions requiredNix builtins.nixVersion == 1 then
  abort "This version of Nixpkgs requires Nix >= ${requiredNix} (nixpkgs-standin, as lib/minfeatures.nix), this is ${builtins.nixVersion or "unknown"}"
else if !builtins.elem system systems then throw "stand-in nixpkgs: unsupported system '${system}'"
else if unknownConfig != [ ] then
  throw "stand-in nixpkgs: config option(s) ${builtins.concatStringsSep ", " unknownConfig} unknown here"
# pkgs/top-level/config.nix: cudaCapabilities is a list of strings ("8.9"), as
# pkgs/development/cuda-modules reads them
else if cfg ? cudaCapabilities && !(builtins.isList cfg.cudaCapabilities && builtins.all builtins.isString cfg.cudaCapabilities) then
  throw "stand-in nixpkgs: config.cudaCapabilities must be a list of strings"
else self
