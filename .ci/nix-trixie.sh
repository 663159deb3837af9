#!/usr/bin/env bash
# A Nix that current nixpkgs accepts (>= 2.18, lib/minfeatures.nix), for the tests, on a Debian 12
# machine whose own nix-bin is 2.8: Debian trixie's nix-bin (2.26), unpacked into .ci/nix-trixie
# (gitignored) without touching the system's apt or dpkg state.
#
#   - apt runs with a private sources list, lists, cache and an empty dpkg status, so it resolves
#     nix-bin (and patchelf) with all of their trixie dependencies, glibc included, and only
#     downloads them;
#   - each .deb is unpacked with `dpkg -x` into .ci/nix-trixie/root;
#   - trixie's patchelf, run through trixie's loader, points trixie's `nix` at that loader and
#     those libraries (interpreter and RPATH): it runs, and re-runs itself (Nix's build hook is
#     its own executable), without the host's glibc and without LD_LIBRARY_PATH, which would leak
#     trixie's libraries into the host programs Nix starts;
#   - .ci/nix-trixie/bin/{nix,nix-instantiate,...} run it with its own store, state and
#     configuration under .ci/nix-trixie, so the system's Nix 2.8 and its store are left alone.
#
# Idempotent: when .ci/nix-trixie/bin/nix answers, nothing is done. Prints the version.
# ENVPARITY_DEBIAN_MIRROR names another Debian mirror (default http://deb.debian.org/debian).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="$PWD/.ci/nix-trixie"
TMP="$DIR.tmp"
MIRROR="${ENVPARITY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -x "$DIR/bin/nix" ] && "$DIR/bin/nix" --version >/dev/null 2>&1; then
    "$DIR/bin/nix" --version
    exit 0
fi

rm -rf "$TMP"
mkdir -p "$TMP/apt/parts" "$TMP/apt/lists/partial" "$TMP/apt/cache/archives/partial" "$TMP/root"
echo "deb $MIRROR trixie main" > "$TMP/apt/sources.list"
: > "$TMP/apt/status"
APT=(
    -o "Dir::Etc::SourceList=$TMP/apt/sources.list"
    -o "Dir::Etc::SourceParts=$TMP/apt/parts"
    -o "Dir::Etc::Preferences=$TMP/apt/preferences"
    -o "Dir::Etc::PreferencesParts=$TMP/apt/parts"
    -o "Dir::State::Lists=$TMP/apt/lists"
    -o "Dir::State::status=$TMP/apt/status"
    -o "Dir::Cache=$TMP/apt/cache"
    -o "APT::Architecture=amd64"
    -o "APT::Install-Recommends=false"
    -o "DPkg::Lock::Timeout=300"
)
apt-get "${APT[@]}" -q update
apt-get "${APT[@]}" -q -y --download-only install nix-bin patchelf
for deb in "$TMP"/apt/cache/archives/*.deb; do
    dpkg -x "$deb" "$TMP/root"
done

# Paths as they will be once $TMP is moved to $DIR.
ROOT="$DIR/root"
LIBS="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu"
(
    cd "$TMP/root"
    ./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
        --library-path "$TMP/root/usr/lib/x86_64-linux-gnu:$TMP/root/lib/x86_64-linux-gnu" \
        ./usr/bin/patchelf --set-interpreter "$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
        --force-rpath --set-rpath "$LIBS" ./usr/bin/nix
)

mkdir -p "$TMP/bin" "$TMP/etc" "$TMP/store" "$TMP/var/nix" "$TMP/var/log/nix"
# Single-user, no sandbox (no user namespaces on these machines), no build users, flakes on.
printf '%s\n' "experimental-features = nix-command flakes" "sandbox = false" \
    "build-users-group =" > "$TMP/etc/nix.conf"
# nix-instantiate, nix-build, ... are links to `nix`, which picks its behaviour from its name.
for name in nix nix-instantiate nix-build nix-store nix-shell nix-env; do
    {
        echo '#!/bin/sh'
        echo "# trixie's nix-bin with its own store (written by .ci/nix-trixie.sh)"
        echo "export NIX_STORE_DIR='$DIR/store' NIX_STATE_DIR='$DIR/var/nix'"
        echo "export NIX_LOG_DIR='$DIR/var/log/nix' NIX_CONF_DIR='$DIR/etc'"
        echo "exec '$ROOT/usr/bin/$name' \"\$@\""
    } > "$TMP/bin/$name"
    chmod +x "$TMP/bin/$name"
done
rm -rf "$TMP/apt" "$DIR"
mv "$TMP" "$DIR"
"$DIR/bin/nix" --version
