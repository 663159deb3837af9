#!/usr/bin/env bash
# A Nix that current nixpkgs accepts (>= 2.18, lib/minfeatures.nix), for the tests, on a Debian 12
# machine whose own nix-bin is 2.8: Debian trixie's nix-bin (2.26), unpacked into .ci/nix-trixie
# (gitignored) without touching the system's apt or dpkg state.
#
#   - apt runs with a private sources list, lists, cache and an empty dpkg status, so it resolves
#     nix-bin with all of its trixie dependencies (glibc included) and only downloads them;
#   - each .deb is unpacked with `dpkg -x` into .ci/nix-trixie/root;
#   - .ci/nix-trixie/bin/{nix,nix-instantiate,...} run trixie's binary through trixie's own loader
#     and libraries, with its own store, state and configuration under .ci/nix-trixie, so the
#     system's Nix 2.8 and its store database are left alone.
#
# Idempotent: when .ci/nix-trixie/bin/nix answers, nothing is done. Prints the version.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="$PWD/.ci/nix-trixie"
MIRROR="${ENVPARITY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -x "$DIR/bin/nix" ] && "$DIR/bin/nix" --version >/dev/null 2>&1; then
    "$DIR/bin/nix" --version
    exit 0
fi

rm -rf "$DIR.tmp"
mkdir -p "$DIR.tmp/apt/parts" "$DIR.tmp/apt/lists/partial" "$DIR.tmp/apt/cache/archives/partial" "$DIR.tmp/root"
echo "deb $MIRROR trixie main" > "$DIR.tmp/apt/sources.list"
: > "$DIR.tmp/apt/status"
APT=(
    -o "Dir::Etc::SourceList=$DIR.tmp/apt/sources.list"
    -o "Dir::Etc::SourceParts=$DIR.tmp/apt/parts"
    -o "Dir::Etc::Preferences=$DIR.tmp/apt/preferences"
    -o "Dir::Etc::PreferencesParts=$DIR.tmp/apt/parts"
    -o "Dir::State::Lists=$DIR.tmp/apt/lists"
    -o "Dir::State::status=$DIR.tmp/apt/status"
    -o "Dir::Cache=$DIR.tmp/apt/cache"
    -o "APT::Architecture=amd64"
    -o "APT::Install-Recommends=false"
    -o "DPkg::Lock::Timeout=300"
)
apt-get "${APT[@]}" -q update
apt-get "${APT[@]}" -q -y --download-only install nix-bin
for deb in "$DIR.tmp"/apt/cache/archives/*.deb; do
    dpkg -x "$deb" "$DIR.tmp/root"
done

ROOT="$DIR/root"
mkdir -p "$DIR.tmp/bin" "$DIR.tmp/etc" "$DIR.tmp/store" "$DIR.tmp/var/nix" "$DIR.tmp/var/log/nix"
# Single-user, no sandbox (no user namespaces on these machines), no build users, flakes on.
cat > "$DIR.tmp/etc/nix.conf" <<'EOF'
experimental-features = nix-command flakes
sandbox = false
build-users-group =
EOF
# Nix picks its behaviour from argv[0] (nix-instantiate, nix-build, ... are the one `nix` binary);
# trixie's loader passes it on with --argv0.
for name in nix nix-instantiate nix-build nix-store nix-shell nix-env; do
    cat > "$DIR.tmp/bin/$name" <<EOF
#!/bin/sh
# trixie's nix-bin through trixie's loader and libraries; its own store (written by .ci/nix-trixie.sh)
export NIX_STORE_DIR="$DIR/store" NIX_STATE_DIR="$DIR/var/nix" NIX_LOG_DIR="$DIR/var/log/nix"
export NIX_CONF_DIR="$DIR/etc"
exec "$ROOT/usr/lib64/ld-linux-x86-64.so.2" --argv0 "$name" \\
    --library-path "$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu" \\
    "$ROOT/usr/bin/nix" "\$@"
EOF
    chmod +x "$DIR.tmp/bin/$name"
done
rm -rf "$DIR.tmp/apt"
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
"$DIR/bin/nix" --version
