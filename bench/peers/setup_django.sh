#!/usr/bin/env bash
# Create bench/peers/.venv-django with Django Channels, daphne, uvicorn and channels_redis
# (the peer servers of `python bench/run.py --peers`). Safe to rerun; the venv is git-ignored.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-django"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# uvicorn without [standard]: plain asyncio loop and the `websockets` protocol library, so the peer
# runs on the same event loop as the servers it is compared with (no uvloop anywhere).
"$venv/bin/pip" install --quiet channels daphne uvicorn websockets channels_redis
"$venv/bin/python" -c "import channels, daphne, uvicorn, channels_redis, django; print('django', django.__version__, 'channels', channels.__version__, 'daphne', daphne.__version__, 'uvicorn', uvicorn.__version__, 'channels_redis', channels_redis.__version__)"
