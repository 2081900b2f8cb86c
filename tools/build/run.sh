#!/bin/bash
# run.sh BUILDDIR — what `make run` does after building: make a key if there
# is none, then start velod in the foreground on loopback with the default
# configuration, and say how to talk to it.  Ctrl-C stops it (counters are
# printed on the way out).
set -eu
O=$1
bin=$O/bin
key=$O/velo.key
port=${VELO_PORT:-7400}
if [ ! -s "$key" ]; then
	id=$("$bin/velo-keygen" -o "$key" --comment "make run")
	echo "  KEY     $key (key id $id)"
fi
cfg=$O/velod-run.json
[ -f "$cfg" ] || cat > "$cfg" <<JSON
{
  "listen": "127.0.0.1:$port",
  "keys": "$key",
  "control_socket": "$O/velod.sock"
}
JSON
cat <<MSG

  velod is starting on udp 127.0.0.1:$port (config $cfg).
  In another terminal, from $(pwd):
    $bin/velo-client ping -n 20                 # round trips
    $bin/velo-client gen "Once upon a time"     # streams an answer
    $bin/velod -s $O/velod.sock -q counters     # live counters
  Ctrl-C here stops velod.

MSG
exec "$bin/velod" -c "$cfg"
