# Sourced by scripts/demo and scripts/test: make .venv (Python >= 3.11) and install the project.
# The install is skipped when pyproject.toml has not changed since the last one.

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "trioprobe needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
    return 1
}

ensure_venv() {
    local extras="$1" python stamp want
    if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$(find_python)
        echo "creating .venv with $python" >&2
        rm -rf .venv
        "$python" -m venv .venv
        .venv/bin/python -m pip install --quiet --upgrade pip
    fi
    stamp=.venv/.trioprobe-installed
    want="$extras $(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "installing trioprobe$extras into .venv" >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"
        echo "$want" >"$stamp"
    fi
}
