# Sourced by scripts/test: a Python virtualenv for maas-py's tests.
#
# maas_python_venv DIR: makes (or reuses) a virtualenv in DIR with maas-py's test
# requirements from PyPI, activates it, and points pyo3 at its interpreter. On a fresh
# Debian machine without python3/venv, installs them from apt first.

maas_python_venv() {
  local dir=$1
  if ! command -v python3 > /dev/null || ! python3 -c "import venv, ensurepip" 2> /dev/null; then
    echo "   installing python3, python3-venv and python3-dev from apt"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-dev > /dev/null
  fi
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r maas-py/requirements-test.txt
  # shellcheck disable=SC1091
  source "$dir/bin/activate"
  # The interpreter pyo3 builds against (the machine's python3 and Debian's libpython can
  # differ; the virtualenv's is the one the tests import into).
  export PYO3_PYTHON="$VIRTUAL_ENV/bin/python"
}
