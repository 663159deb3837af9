# `import nixpkgs { system; config; }` for the stand-in: a package set in which every package is
# a tiny derivation (never built) carrying meta.license, so an unfree package is refused unless
# config allows it, as nixpkgs does. Names not listed here fail evaluation: that catches typos.
{ system, config ? { } }:
let
  lib = import ./lib.nix;
  systems = [ "x86_64-linux" "aarch64-linux" ];
  knownConfig = [ "allowUnfree" "allowUnfreePredicate" "cudaSupport" "cudaCapabilities" ];
  unknownConfig = builtins.filter (k: !builtins.elem k knownConfig) (builtins.attrNames config);

  free = { shortName = "MIT"; free = true; };
  # The licences nixpkgs gives CUDA redistributables (lib.licenses.nvidiaCudaRedist and the
  # cuDNN override of it in pkgs/development/cuda-modules).
  cudaEula = { shortName = "CUDA EULA"; free = false; };
  cudnnEula = { shortName = "cuDNN EULA"; free = false; };
  unfreeRedistributable = { shortName = "unfreeRedistributable"; free = false; };

  allowed = pkg:
    builtins.all (l: l.free or true) (lib.toList (pkg.meta.license or [ ]))
    || config.allowUnfree or false
    || (config ? allowUnfreePredicate && config.allowUnfreePredicate pkg);

  package = { name, license ? free, outputs ? [ "out" ] }:
    let
      drv = derivation {
        inherit name system outputs;
        builder = "/bin/sh";
        args = [ "-c" "for o in $outputs; do echo stand-in > \"\${!o}\"; done" ];
      };
      pkg = drv // { pname = name; meta = { inherit license; }; };
      shortNames = map (l: l.shortName or "?") (lib.toList license);
    in
    if allowed pkg then pkg
    else throw "Package '${name}' has an unfree license (${builtins.concatStringsSep ", " shortNames}), refusing to evaluate.";

  named = names: lib.genAttrs names (name: package { inherit name; });

  # Python interpreters for every Python minor the compatibility table knows (3.8 to 3.15).
  pythons = lib.genAttrs (map (m: "python3${toString m}") (builtins.genList (i: i + 8) 8))
    (name: package { inherit name; });

  cudaPackageSet = version: {
    cudatoolkit = package { name = "cudatoolkit-${version}"; license = cudaEula; };
    cudnn = package { name = "cudnn-${version}"; license = cudnnEula; };
  };
  # The cudaPackages_X_Y that nixpkgs has (see orchestrator/data/compat.toml, nixpkgs = "present");
  # the removed ones throw, as nixpkgs' aliases do.
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
in
if !builtins.elem system systems then throw "stand-in nixpkgs: unsupported system '${system}'"
else if unknownConfig != [ ] then
  throw "stand-in nixpkgs: config option(s) ${builtins.concatStringsSep ", " unknownConfig} unknown here"
else
  pythons // cuda // named [
    # system packages the tests' specs use; add more as specs need them
    "cmake" "curl" "ffmpeg" "gcc" "git" "git-lfs" "glib" "gnumake" "htop" "jq" "libGL"
    "openssh" "pkg-config" "ripgrep" "tmux" "unzip" "uv" "vim" "wget" "zlib"
  ] // {
    inherit lib mkShell config;
    stdenv.cc.cc = package { name = "gcc-unwrapped"; outputs = [ "out" "lib" ]; };
    # unfree and not CUDA: a flake that allows it has an unfree predicate that is too wide
    unrar = package { name = "unrar"; license = unfreeRedistributable; };
  }
