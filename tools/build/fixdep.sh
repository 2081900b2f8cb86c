#!/bin/sh
# fixdep.sh DEPFILE CONFIGDIR
# Rewrites a gcc -MMD dependency file so that an object depends on the
# per-symbol timestamp files kconfig-conf --silentoldconfig keeps under
# CONFIGDIR (include/config/foo/bar.h for CONFIG_FOO_BAR) instead of on
# autoconf.h as a whole: changing one CONFIG_ rebuilds only what uses it.
# The idea is Linux's scripts/basic/fixdep; this is a small shell version.
dep=$1
cfg=$2
[ -f "$dep" ] || exit 0
files=$(sed -e 's/\\$//' -e 's/^[^:]*://' "$dep" | tr ' ' '\n' | grep -v '^$' | grep -v 'autoconf\.h$')
syms=$(cat $files 2>/dev/null | grep -o 'CONFIG_[A-Za-z0-9_]*' | sort -u)
{
	sed -e 's#[^ ]*autoconf\.h##' -e '/^[[:space:]]*\\$/d' -e '/^[[:space:]]*:[[:space:]]*$/d' "$dep"
	echo
	# $(wildcard): a symbol that never changed has no file yet (and a
	# CONFIG_ name in a comment never will); kconfig-conf creates the file
	# when the symbol changes, which then makes it newer than the object.
	for s in $syms; do
		f=$(echo "${s#CONFIG_}" | tr 'A-Z_' 'a-z/')
		echo "$dep $(echo "$dep" | sed 's/\.d$/.o/'): \$(wildcard $cfg/$f.h)"
	done
} > "$dep.tmp" && mv "$dep.tmp" "$dep"
