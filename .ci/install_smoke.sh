#!/usr/bin/env bash
# A non-editable install (a wheel, as `pip install .` makes) in a fresh virtual environment must migrate
# and serve from a folder that is not the checkout: the migrations ship inside the package.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'kill "${server_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# Built from a copy, so setuptools' build/ folder never lands in the checkout.
mkdir "$work/src"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/app" "$repo/core" "$repo/gpu" "$repo/lorapod_cli" "$work/src/"
"$work/venv/bin/pip" install --quiet "$work/src"
cd "$work"
export LORAPOD_WORKSPACE="$work/workspace"
"$work/venv/bin/python" -m app migrate
port="$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$work/venv/bin/lorapod" serve --port "$port" > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/health" > "$work/health.json" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
grep -q '"database":{"ok":true' "$work/health.json" || { cat "$work/serve.log"; echo "install smoke: /health did not answer"; exit 1; }
# /docs is served from assets installed with the package, not from a CDN.
curl -fsS "http://127.0.0.1:$port/docs" | grep -q '/docs/assets/swagger-ui-bundle.js' || { echo "install smoke: /docs"; exit 1; }
curl -fsS -o /dev/null "http://127.0.0.1:$port/docs/assets/swagger-ui-bundle.js" || { echo "install smoke: assets"; exit 1; }
curl -fsS "http://127.0.0.1:$port/ui/static/app.js" > /dev/null || { echo "install smoke: the dashboard's files are not in the wheel"; exit 1; }
# Without ai-toolkit the server is "degraded", which `lorapod health` reports with exit status 3.
"$work/venv/bin/lorapod" health --url "http://127.0.0.1:$port" --json > "$work/cli.json" || test $? -eq 3
grep -q '"database": {"ok": true' "$work/cli.json" || { echo "install smoke: lorapod health did not answer"; exit 1; }
test -f "$work/workspace/lorapod.db" || { echo "install smoke: no database in the workspace"; exit 1; }
if "$work/venv/bin/python" -c 'import pathlib, app; raise SystemExit(str(pathlib.Path(app.__file__)).startswith(("'"$repo"'", "'"$work/src"'")))'; then
    echo "install smoke: a wheel install migrated and served from $work"
else
    echo "install smoke: app was imported from the checkout, not the installed wheel"; exit 1
fi
