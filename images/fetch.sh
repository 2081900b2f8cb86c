#!/bin/bash
# fetch.sh O — fetch the Debian packages make image puts into the image:
# the kernel linux-image-amd64 depends on today, busybox-static and
# dropbear-bin, with `apt-get download` into O/images/debs/ (never installed
# on the host).  Idempotent: a package already there is kept (delete the
# directory to renew: the same files give the same image bytes), so after
# one run make image needs no network.  Writes O/images/debs/selected, the
# file names mkimage.sh unpacks (kernel first).  Run by `make deps` for image
# configurations and by mkimage.sh.
set -euo pipefail
O=$(cd "$1" && pwd)
debs=$O/images/debs
mkdir -p "$debs"
err() { echo "fetch: $*" >&2; exit 1; }

resolve() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1
}
kpkg=$(resolve)
if [ -z "$kpkg" ]; then
	# A fresh machine: no package lists yet.
	apt-get update -qq >/dev/null 2>&1 || true
	kpkg=$(resolve)
fi
[ -n "$kpkg" ] || err "cannot resolve linux-image-amd64 to a kernel package (apt sources? apt-get update?)"

: >"$debs/selected.tmp"
for p in "$kpkg" busybox-static dropbear-bin; do
	have=$(cd "$debs" && ls -1 "${p}"_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
	if [ -z "$have" ]; then
		echo "  APT      download $p"
		dl=$(mktemp -d "$debs/.dl.XXXXXX")
		ok=
		for try in 1 2 3; do
			if (cd "$dl" && apt-get download -qq "$p") >"$dl/log" 2>&1; then ok=y; break; fi
			[ "$try" = 3 ] || sleep $((try * 5))
		done
		if [ -z "$ok" ]; then
			cat "$dl/log" >&2; rm -rf "$dl"
			err "apt-get download $p failed 3 times (network? apt-get update?)"
		fi
		have=$(cd "$dl" && ls -1 "${p}"_*.deb | head -n 1)
		# Moved in whole: an interrupted download never counts as present.
		mv "$dl/$have" "$debs/$have"
		rm -rf "$dl"
	fi
	dpkg-deb -I "$debs/$have" >/dev/null 2>&1 || err "$debs/$have is not a valid package (delete it)"
	echo "$have" >>"$debs/selected.tmp"
done
mv "$debs/selected.tmp" "$debs/selected"
