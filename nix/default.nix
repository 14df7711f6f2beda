# nix-build nix/ builds hv with the nixpkgs on NIX_PATH.
{
  pkgs ? import <nixpkgs> { },
}:
pkgs.callPackage ./package.nix { }
