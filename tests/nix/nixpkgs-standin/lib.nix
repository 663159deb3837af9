# The subset of nixpkgs.lib that generated flakes use; any other name fails evaluation
# (lib/attrsets.nix, lib/lists.nix, lib/strings.nix).
{
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  toList = x: if builtins.isList x then x else [ x ];
  mapAttrs = builtins.mapAttrs;
  optionalAttrs = cond: attrs: if cond then attrs else { };
  filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
    (name: if pred name set.${name} then [ { inherit name; value = set.${name}; } ] else [ ])
    (builtins.attrNames set));
  # lib/strings.nix: a POSIX shell word, single-quoted
  escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
  # As nixpkgs: each package's "lib" output when it has one, else its default output.
  makeLibraryPath = packages:
    builtins.concatStringsSep ":" (map (p: "${p.lib or p.out or p}/lib") packages);
}
