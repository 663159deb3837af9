# A stand-in for nixpkgs, for tests only: the few attributes envparity's generated flakes use,
# laid out as the pinned nixpkgs lays them out (default.nix names the nixpkgs files it mirrors),
# each a tiny derivation that is never built. `nix flake check --override-input nixpkgs
# path:tests/nix/nixpkgs-standin` evaluates a generated flake against it offline: a structural
# check (every attribute exists, every package is a derivation, unfree is allowed only where the
# flake says so), not a build and not a check of real package contents.
{
  description = "nixpkgs stand-in for envparity's tests";
  outputs = { self }: { lib = import ./lib.nix; };
}
