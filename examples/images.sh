#!/bin/sh
# Makes the images examples/manifests uses available to the local Docker engine.
#
# On a normal machine there is nothing to do: the agent pulls busybox:1.36 from Docker Hub
# the first time a pod needs it. Offline (no registry), this script builds an equivalent
# image from the host's static busybox (Debian/Ubuntu: apt-get install busybox-static):
# `FROM scratch` plus /bin/busybox and its applet links. Images already present are kept.
#
# Usage: examples/images.sh            (BUSYBOX=/path/to/static/busybox to use another binary)
set -eu

IMAGES="busybox:1.36"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

for image in $IMAGES; do
    if docker image inspect "$image" >/dev/null 2>&1; then
        echo "$image: present"
        continue
    fi
    if [ -z "${BERTH_OFFLINE:-}" ] && timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
        echo "$image: pulled"
        continue
    fi
    if [ ! -x "$BUSYBOX" ]; then
        echo "error: cannot pull $image and there is no static busybox at $BUSYBOX" >&2
        echo "  install it (apt-get install busybox-static) or set BUSYBOX=/path/to/busybox" >&2
        exit 2
    fi
    if ! "$BUSYBOX" true >/dev/null 2>&1; then
        echo "error: $BUSYBOX does not run (it must be a static busybox)" >&2
        exit 2
    fi
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    cp "$BUSYBOX" "$context/busybox"
    cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-m", "1777", "/tmp"]
CMD ["/bin/sh"]
DOCKERFILE
    docker build -q -t "$image" "$context" >/dev/null
    rm -rf "$context"
    trap - EXIT
    echo "$image: built from $BUSYBOX"
done
