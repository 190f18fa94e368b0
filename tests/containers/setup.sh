#!/usr/bin/env bash
# Prepares this machine to run docker-compose.yml with podman and no image registry
# (docs/deploy.md, the recipe in CONTAINERS.md), for tests/test_compose.py and CI:
#
#   1. podman, runc, debootstrap (apt) and podman-compose (PyPI), when missing;
#   2. /etc/containers/containers.conf: runc and ulimits this VM allows;
#   3. localhost/debian:bookworm-min, imported from a debootstrap of the mirror apt uses;
#   4. localhost/streamserve-python:3.11, Debian's Python with streamserve's dependencies
#      installed from wheels downloaded here (containers cannot reach PyPI through this network);
#   5. localhost/streamserve-kafka:4.1.1, Debian's Java 17 with the Kafka jars Maven resolved here.
#
# Idempotent: each step is skipped when its result is current (the root file system tarball and
# the wheels are cached under $STREAMSERVE_CONTAINER_CACHE, default ~/.cache/streamserve/containers;
# an image is rebuilt only when the inputs recorded in its label changed). Any step that cannot
# run stops the script with a message saying which and why: it never carries on half-prepared.
#
#   tests/containers/setup.sh            # everything
#   tests/containers/setup.sh images     # steps 3-5 only (the engine is already installed)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${STREAMSERVE_CONTAINER_CACHE:-$HOME/.cache/streamserve/containers}
python=${PYTHON:-python}
debian_image=localhost/debian:bookworm-min
python_image=${STREAMSERVE_PYTHON_IMAGE:-localhost/streamserve-python:3.11}
kafka_image=${STREAMSERVE_KAFKA_IMAGE:-localhost/streamserve-kafka:4.1.1}
label=io.streamserve.inputs
podman_compose_version=1.6.0

say() { printf '\n== setup.sh: %s\n' "$*" >&2; }
fail() { printf '\nsetup.sh FAILED: %s\n' "$*" >&2; exit 1; }
timed() { local start=$SECONDS rc=0; "$@" || rc=$?; printf '   (%ss)\n' $((SECONDS - start)) >&3; return $rc; }
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo -n "$@" || fail "needs root (or sudo) for: $*"; fi; }

install_engine() {
    local missing=()
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if ((${#missing[@]})); then
        say "installing ${missing[*]} with apt-get"
        as_root apt-get update -qq || fail "apt-get update failed (is Debian's mirror reachable?)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null \
            || fail "apt-get install podman runc debootstrap failed"
    fi
    if ! command -v podman-compose >/dev/null; then
        say "installing podman-compose $podman_compose_version from PyPI"
        "$python" -m pip install --quiet "podman-compose==$podman_compose_version" \
            || fail "pip install podman-compose==$podman_compose_version failed"
        command -v podman-compose >/dev/null || fail "podman-compose installed but not on PATH ($PATH)"
    fi
}

configure_engine() {
    local conf=/etc/containers/containers.conf marker="# written by streamserve tests/containers/setup.sh"
    if [[ ! -f $conf ]] || grep -qF "$marker" "$conf"; then
        as_root mkdir -p /etc/containers
        # No CAP_SYS_RESOURCE here: podman's default ulimits cannot be set. crun refuses this
        # machine's hybrid cgroups; runc runs.
        as_root tee "$conf" >/dev/null <<EOF
$marker
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
    elif ! grep -q '^runtime *= *"runc"' "$conf"; then
        fail "$conf exists and is not ours; make sure it sets runtime = \"runc\" and default_ulimits (CONTAINERS.md)"
    fi
    podman info >/dev/null 2>&1 || fail "podman does not start: $(podman info 2>&1 | tail -5)"
}

# The first Debian mirror apt is configured with (deb822 .sources files or sources.list).
debian_mirror() {
    local mirror
    mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -1)
    [[ -n $mirror ]] || mirror=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '$3 == "bookworm" {print $2}' | head -1)
    [[ -n $mirror ]] || fail "no Debian mirror found in apt's sources (/etc/apt/sources.list*)"
    echo "$mirror"
}

image_inputs() { podman image inspect --format "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true; }

# build IMAGE INPUTS DOCKERFILE CONTEXT: podman build, its log kept under the cache folder.
build() {
    local log
    log=$cache/build-$(basename "${1%%:*}").log
    timed podman build --layers --label "$label=$2" -f "$3" -t "$1" "$4" >"$log" 2>&1 \
        || fail "podman build of $1 failed, log: $log
$(tail -20 "$log")"
}

base_image() {
    if podman image exists "$debian_image"; then return; fi
    local tarball=$cache/debian-bookworm-minbase.tar
    if [[ ! -s $tarball ]]; then
        local mirror rootfs
        mirror=$(debian_mirror)
        rootfs=$(mktemp -d)
        say "debootstrap bookworm minbase from $mirror (about 1.5 min)"
        timed as_root debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || fail "debootstrap failed, log: $cache/debootstrap.log ($(tail -3 "$cache/debootstrap.log"))"
        as_root tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        as_root rm -rf "$rootfs"
    fi
    say "importing $tarball as $debian_image"
    podman import "$tarball" "$debian_image" >/dev/null || fail "podman import $tarball failed"
}

python_base() {
    local pins inputs context
    pins=$("$python" "$here/pins.py") || fail "cannot list the pinned dependencies (pins.py)"
    inputs=$(printf '%s\n' "$pins" | cat - "$here/python.Dockerfile" | sha256sum | cut -c1-16)
    if [[ $(image_inputs "$python_image") == "$inputs" ]]; then return; fi
    local wheels=$cache/wheels-$inputs
    if [[ ! -f $wheels/.complete ]]; then
        say "downloading wheels for Python 3.11 / manylinux into $wheels"
        rm -rf "$wheels"
        # Every manylinux tag bookworm's glibc 2.36 runs (pip does not expand them itself).
        local platforms=(--platform manylinux2014_x86_64) glibc
        for glibc in $(seq 17 36); do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
        # shellcheck disable=SC2086  # one requirement a word
        timed "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
            --implementation cp --abi cp311 "${platforms[@]}" -d "$wheels" $pins "setuptools>=68" wheel \
            || fail "pip download of the wheels failed (is PyPI reachable from this machine?)"
        touch "$wheels/.complete"
    fi
    context=$(mktemp -d)
    cp -r "$wheels" "$context/wheels"
    printf '%s\n' "$pins" >"$context/pins.txt"
    say "building $python_image"
    build "$python_image" "$inputs" "$here/python.Dockerfile" "$context"
    rm -rf "$context"
}

kafka_base() {
    local jars inputs context
    jars=$(cd "$root" && "$python" -c 'from pipeline.broker import kafka_classpath; print(kafka_classpath()[0].parent)') \
        || fail "cannot resolve the Kafka jars (streamserve broker --fetch: needs Maven and Java)"
    inputs=$( (cd "$jars" && ls; cat "$here/kafka.Dockerfile" "$here"/kafka/*) | sha256sum | cut -c1-16)
    if [[ $(image_inputs "$kafka_image") == "$inputs" ]]; then return; fi
    context=$(mktemp -d)
    cp -r "$jars" "$context/jars"
    cp "$here"/kafka/* "$context/"
    say "building $kafka_image from the jars in $jars"
    build "$kafka_image" "$inputs" "$here/kafka.Dockerfile" "$context"
    rm -rf "$context"
}

main() {
    exec 3>&2  # timings reach the terminal even from steps whose output goes to a log
    mkdir -p "$cache"
    if [[ ${1:-all} != images ]]; then
        install_engine
        configure_engine
    fi
    command -v podman >/dev/null || fail "podman is not installed: run $0 without 'images'"
    base_image
    python_base
    kafka_base
    say "ready: podman $(podman version --format '{{.Client.Version}}'), $(podman-compose --version 2>/dev/null | head -1)"
    echo "export STREAMSERVE_PYTHON_IMAGE=$python_image STREAMSERVE_KAFKA_IMAGE=$kafka_image"
}

main "$@"
