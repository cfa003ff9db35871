#!/bin/sh
# Installs the Debian packages gpt2d builds against, if any is missing.
# Needs root (it runs apt-get update once, then apt-get install). Prints what it does.
set -e
PKGS="gcc make pkg-config libzmq3-dev libmsgpack-dev libopenblas-dev libpcre2-dev libsystemd-dev libjansson-dev libxxhash-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all build packages present ($PKGS)"
    exit 0
fi
echo "deps: installing missing Debian packages:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "deps: not root; please run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q $missing
echo "deps: done"
