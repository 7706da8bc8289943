# shellcheck shell=bash
# The Python the tests run helpers with: a venv with pinned PyPI packages.
# Source it (after scripts/lib.sh) and call
#
#   ensure_python_venv VENV_DIR REQUIREMENTS_FILE...
#
# It makes the venv if missing or broken, and runs `pip install -r` only
# when the requirement files or the interpreter changed since the last
# install (a stamp in the venv records them), so a second run is quick.

ensure_python_venv() {
    local venv=$1
    shift
    local python=${PYTHON:-python3}
    command -v "$python" >/dev/null 2>&1 || apt_install python3 python3-venv || return 1

    if [[ -e $venv ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        note "the venv $venv is broken (its interpreter does not run): making it anew"
        rm -rf "$venv"
    fi
    if [[ ! -e $venv ]]; then
        note "making the venv $venv with $("$python" --version 2>&1)"
        if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
            # Debian's own python3 needs python3-venv for this.
            rm -rf "$venv"
            apt_install python3-venv || return 1
            quiet "python -m venv $venv" "$python" -m venv "$venv" || return 1
        fi
    fi

    local stamp=$venv/.coffer-requirements.sha256 want
    want=$({
        "$venv/bin/python" --version 2>&1
        cat "$@"
    } | sha256sum | cut -d' ' -f1)
    if [[ -r $stamp && $(<"$stamp") == "$want" ]]; then
        note "pinned packages already installed ($*)"
    else
        local reqs=() file
        for file in "$@"; do reqs+=(-r "$file"); done
        note "pip install ${reqs[*]}"
        quiet "pip install into $venv" env PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
            "$venv/bin/python" -m pip install -q "${reqs[@]}" || return 1
        printf '%s\n' "$want" >"$stamp"
    fi
}

# find_python VERSION...: prints the first interpreter found that runs and
# is one of VERSIONs (like 3.12), pyenv's installs first. A name on PATH
# may be a pyenv shim that does not run, so each candidate is started.
find_python() {
    local version candidate
    for version in "$@"; do
        for candidate in "$HOME"/.pyenv/versions/"$version"*/bin/python3 "python$version" python3; do
            if "$candidate" -c "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$version')" \
                >/dev/null 2>&1; then
                command -v "$candidate"
                return 0
            fi
        done
    done
    return 1
}
