#!/usr/bin/env bash
# microrl setup: installs every dependency on a fresh Debian 12 (bookworm) machine and
# builds the project into build/. Idempotent: a second run with nothing to do takes seconds.
#
#   deploy/setup.sh              install what is missing, configure, build
#   deploy/setup.sh --deps-only  install what is missing, do not configure or build
#   deploy/setup.sh --relock     reinstall the Python venv from deploy/requirements.txt and
#                                rewrite deploy/requirements.lock (all transitive pins)
#
# Environment:
#   MICRORL_VENV        Python venv holding LibTorch (the PyPI torch wheel) and the test
#                       oracles; shared by every checkout on the machine (default /opt/microrl/venv)
#   MICRORL_BUILD_DIR   build directory (default <repo>/build)
#   MICRORL_BUILD_TYPE  CMake build type (default Release)
#   MICRORL_PY_PACKAGES  install only these packages of the lock, with their dependencies
#                       at the lock's versions (default: the whole lock); deploy/Dockerfile
#                       installs what the programs and the demo need, no test oracles
#
# Needs root for apt (uses sudo when not root). Reaches only Debian's archive and PyPI.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MICRORL_VENV:-/opt/microrl/venv}
BUILD_DIR=${MICRORL_BUILD_DIR:-$REPO/build}
BUILD_TYPE=${MICRORL_BUILD_TYPE:-Release}
DEPS_ONLY=0
RELOCK=0
for arg in "$@"; do
  case "$arg" in
    --deps-only) DEPS_ONLY=1 ;;
    --relock) RELOCK=1 ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root (or install sudo)" >&2; exit 1; }
  SUDO=sudo
fi

step_start=0
step() { step_start=$(date +%s%N); printf '[setup] %s ... ' "$1"; }
done_step() {
  local ms=$((($(date +%s%N) - step_start) / 1000000))
  printf 'done (%d.%01d s)\n' $((ms / 1000)) $((ms % 1000 / 100))
}

# ---------------------------------------------------------------------------------------
# 1. Debian packages.
APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config ccache git ca-certificates curl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgtest-dev libgmock-dev
  libcivetweb-dev civetweb nlohmann-json3-dev libpcre2-dev libutf8proc-dev libyaml-cpp-dev
  libcpp-httplib-dev
  libcurl4-openssl-dev libssl-dev openssl zlib1g-dev libgmp-dev
  python3 python3-venv python3-dev
  prometheus docker-compose clang libclang-rt-14-dev
)
missing_packages() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}
missing=$(missing_packages)
if [ -n "$missing" ]; then
  echo "[setup] installing Debian packages:" $missing
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# apt_suite SUITE DIR: sets APT_SUITE to apt-get options for a throw-away configuration
# (lists under DIR) that reads Debian SUITE from the machine's own mirror (the first
# stanza of debian.sources with the suite changed; Debian's main archive where the
# machine has no deb822 sources file). Nothing under /etc/apt is edited.
apt_suite() {
  local suite=$1 dir=$2
  mkdir -p "$dir/lists/partial"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
      | sed -E "s/^Suites:.*/Suites: $suite/" > "$dir/$suite.sources"
  else
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' "Suites: $suite" \
      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
      > "$dir/$suite.sources"
  fi
  APT_SUITE=(-o Dir::Etc::sourcelist="$dir/$suite.sources" -o Dir::Etc::sourceparts=/dev/null
             -o Dir::State::Lists="$dir/lists" -o APT::Sandbox::User=root)
}

# prometheus-cpp 1.0.2 is not in bookworm: take trixie's binary packages through a
# throw-away apt configuration (nothing under /etc/apt is edited).
if ! dpkg-query -W -f='${Status}' prometheus-cpp-dev 2>/dev/null | grep -q 'install ok installed'; then
  echo "[setup] installing prometheus-cpp from Debian trixie"
  T=$(mktemp -d /tmp/trixie-apt.XXXXXX)
  trap '$SUDO rm -rf "$T"' EXIT
  mkdir -p "$T/debs"
  apt_suite trixie "$T"
  O=("${APT_SUITE[@]}")
  $SUDO apt-get "${O[@]}" update -qq
  (cd "$T/debs" && $SUDO apt-get "${O[@]}" download -qq prometheus-cpp-dev \
     libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0)
  # The push library depends on trixie's libcurl4t64, which needs trixie's libc6. On amd64
  # it has the same ABI as bookworm's libcurl4 (libcurl.so.4, CURL_OPENSSL_4): rewrite
  # that one dependency.
  P=$(ls "$T"/debs/libprometheus-cpp-push1.0_*.deb)
  $SUDO dpkg-deb -R "$P" "$T/push"
  $SUDO sed -i -E 's/libcurl4t64( \([^)]*\))?/libcurl4 (>= 7.16.2)/' "$T/push/DEBIAN/control"
  $SUDO dpkg-deb -b "$T/push" "$P" >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$T"/debs/*.deb >/dev/null
  $SUDO rm -rf "$T"
  trap - EXIT
fi

# ---------------------------------------------------------------------------------------
# 2. Python venv: LibTorch (from the PyPI torch wheel) and the test oracles.
LOCK="$REPO/deploy/requirements.lock"
REQS="$REPO/deploy/requirements.txt"
STAMP="$VENV/.microrl-lock.sha256"
# The venv is shared by every checkout on the machine: one setup at a time changes it.
exec 9>"/tmp/microrl-venv.lock"
flock 9
if [ ! -d "$VENV" ] && ! mkdir -p "$VENV" 2>/dev/null; then
  $SUDO install -d -o "$(id -u)" -g "$(id -g)" "$VENV"
fi
if [ "$RELOCK" = 1 ] || [ ! -f "$LOCK" ]; then
  step "creating $VENV from requirements.txt (new lock)"
  /usr/bin/python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  {
    echo "# Generated by deploy/setup.sh --relock from deploy/requirements.txt; do not edit."
    "$VENV/bin/pip" freeze --disable-pip-version-check | LC_ALL=C sort
  } > "$LOCK"
  sha256sum "$LOCK" | cut -d' ' -f1 > "$STAMP"
  done_step
else
  want=$(sha256sum "$LOCK" | cut -d' ' -f1)
  [ -n "${MICRORL_PY_PACKAGES:-}" ] && want="$want $MICRORL_PY_PACKAGES"
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    step "installing Python packages into $VENV (deploy/requirements.lock)"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
    if [ -n "${MICRORL_PY_PACKAGES:-}" ]; then
      # shellcheck disable=SC2086
      "$VENV/bin/pip" install -q --disable-pip-version-check -c "$LOCK" $MICRORL_PY_PACKAGES
    else
      "$VENV/bin/pip" install -q --disable-pip-version-check -r "$LOCK"
    fi
    echo "$want" > "$STAMP"
    done_step
  fi
fi
flock -u 9
PURELIB=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -f "$PURELIB/torch/lib/libtorch.so" ] || { echo "setup.sh: no LibTorch in $PURELIB/torch" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# 2b. gloo's headers for c10d's ProcessGroupGloo.hpp (the torch wheel ships gloo's code in
# libtorch_cpu.so, not its headers). Debian forky's libgloo-dev is the nearest packaged
# version to the gloo torch 2.11 was built with (docs/scaling.md says what was checked).
# Only its headers are unpacked, into the venv; no Debian gloo library is installed or
# linked.
GLOO_DEB=libgloo-dev_0.0~git20250912.d97133a-2_amd64.deb
GLOO_SHA256=2ee01a68afe26991fbb7c5ead2815f113d37da20e2587cd339408030df7d2e2a
if [ "$(cat "$VENV/gloo/SOURCE" 2>/dev/null)" != "$GLOO_DEB" ]; then
  step "unpacking gloo headers ($GLOO_DEB) into $VENV/gloo"
  G=$(mktemp -d /tmp/forky-apt.XXXXXX)
  mkdir -p "$G/debs"
  apt_suite forky "$G"
  # forky's Release file is valid for a week only; a mirror or proxy serving an older copy
  # would refuse it. Its date is not checked here because the .deb's SHA-256 is, below.
  O=("${APT_SUITE[@]}" -o Dir::Cache="$G" -o Acquire::Check-Valid-Until=false)
  apt-get "${O[@]}" update -qq
  version=${GLOO_DEB#libgloo-dev_}; version=${version%_amd64.deb}
  (cd "$G/debs" && apt-get "${O[@]}" download -qq "libgloo-dev=$version") || {
    echo "setup.sh: Debian forky no longer has libgloo-dev $version; see docs/scaling.md" >&2
    exit 1; }
  echo "$GLOO_SHA256  $G/debs/$GLOO_DEB" | sha256sum -c --quiet - || {
    echo "setup.sh: $GLOO_DEB does not have the expected SHA-256" >&2; exit 1; }
  dpkg-deb -x "$G/debs/$GLOO_DEB" "$G/x"
  rm -rf "$VENV/gloo"
  mkdir -p "$VENV/gloo"
  cp -r "$G/x/usr/include" "$VENV/gloo/include"
  echo "$GLOO_DEB" > "$VENV/gloo/SOURCE"
  rm -rf "$G"
  done_step
fi

[ "$DEPS_ONLY" = 1 ] && { echo "[setup] dependencies ready (venv $VENV)"; exit 0; }

# ---------------------------------------------------------------------------------------
# 3. Configure (once) and build.
if [ ! -f "$BUILD_DIR/build.ninja" ] || \
   ! grep -q "^MICRORL_PYTHON:FILEPATH=$VENV/bin/python$" "$BUILD_DIR/CMakeCache.txt" || \
   ! grep -q "^CMAKE_BUILD_TYPE:STRING=$BUILD_TYPE$" "$BUILD_DIR/CMakeCache.txt"; then
  step "configuring $BUILD_DIR ($BUILD_TYPE)"
  mkdir -p "$BUILD_DIR"
  cmake -S "$REPO" -B "$BUILD_DIR" -G Ninja -Wno-dev \
    -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
    -DMICRORL_PYTHON:FILEPATH="$VENV/bin/python" >"$BUILD_DIR/configure.log" 2>&1 \
    || { cat "$BUILD_DIR/configure.log" >&2; exit 1; }
  done_step
fi
step "building $BUILD_DIR"
echo
ninja -C "$BUILD_DIR"
done_step
