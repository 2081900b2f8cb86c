#!/bin/bash
# run.sh BUILDDIR — what `make run` does after building: make a key if there
# is none, then start velod in the foreground on loopback with the CPU
# backend and the bundled model (images/models/fortune-5m-fp8.velo, a 5 M
# parameter Llama trained on fortune cookies: docs/bundled-model.md), and
# say how to talk to it.  velod loads the image, runs its known-answer
# self-test, and only then says ready.  Ctrl-C stops it (counters are
# printed on the way out).  VELO_MODEL=path picks another image.
set -eu
O=$1
bin=$O/bin
key=$O/velo.key
port=${VELO_PORT:-7400}
if [ ! -s "$key" ]; then
	id=$("$bin/velo-keygen" -o "$key" --comment "make run")
	echo "  KEY     $key (key id $id)"
fi
src=$(cd "$(dirname "$0")/../.." && pwd)
model=${VELO_MODEL:-$src/images/models/fortune-5m-fp8.velo}
[ -f "$model" ] || { echo "run: model image $model missing" >&2; exit 1; }
# one worker thread: the dataplane and the scheduler have the other cores
cfg=$O/velod-run.json
cat > "$cfg" <<JSON
{
  "listen": "127.0.0.1:$port",
  "keys": "$key",
  "control_socket": "$O/velod.sock",
  "models": [{ "name": "fortune", "image": "$model", "label": "production",
               "backend": "cpu", "kv_blocks": 512, "seqs_max": 16,
               "step_tokens_max": 256, "threads": 1 }]
}
JSON
cat <<MSG

  velod is starting on udp 127.0.0.1:$port (config $cfg).
  In another terminal, from $(pwd):
    $bin/velo-client ping -n 20                 # round trips
    $bin/velo-client gen "A wise man"           # streams an answer
    $bin/velo-client gen --stream sentence --max-tokens 80 "Never"
    $bin/velod -s $O/velod.sock -q models       # loaded models, self-test
    $bin/velod -s $O/velod.sock -q counters     # live counters
  Ctrl-C here stops velod.

MSG
exec "$bin/velod" -c "$cfg"
