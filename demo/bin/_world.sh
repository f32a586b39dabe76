# Shared by the demo simulators: the "world" (what is reachable where) lives in $DRX_DEMO_WORLD,
# each simulated host's own state in $DRX_HOST_DIR. Before any drill, site A serves.
set -eu
# hosts of a lab log in as another user than the controller: the simulated world is shared
umask 000
WORLD=${DRX_DEMO_WORLD:-.drx/demo-world}
HOST_DIR=${DRX_HOST_DIR:-$WORLD/control}
mkdir -p "$WORLD/serving" "$WORLD/readonly" "$WORLD/dns" "$HOST_DIR"
if [ ! -f "$WORLD/.init" ]; then
  : > "$WORLD/serving/127.0.1.10"
  echo 127.0.1.10 > "$WORLD/dns/www"
  : > "$WORLD/.init"
fi
