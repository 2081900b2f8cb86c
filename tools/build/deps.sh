#!/bin/sh
# deps.sh PKG... — install the Debian packages in the list that are missing.
# Quick and idempotent: one dpkg-query when everything is there; apt-get only
# for what is missing, without recommends.  Needs root (or sudo) to install.
missing=
for p in "$@"; do
	s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
	[ "$s" = installed ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "  DEPS    installing:$missing"
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || { echo "deps: apt-get update failed" >&2; exit 1; }
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
	echo "deps: apt-get install$missing failed" >&2; exit 1; }
