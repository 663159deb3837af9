# The subset of nixpkgs.lib that generated flakes use; any other name fails evaluation.
{
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
  toList = x: if builtins.isList x then x else [ x ];
  # As nixpkgs: each package's "lib" output when it has one, else its default output.
  makeLibraryPath = packages:
    builtins.concatStringsSep ":" (map (p: "${p.lib or p.out or p}/lib") packages);
}
