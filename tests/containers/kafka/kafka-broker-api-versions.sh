#!/bin/bash
# The health check apache/kafka's image runs (bin/kafka-broker-api-versions.sh), reduced to
# what docker-compose.yml asks of it: exit 0 when the broker at --bootstrap-server answers an
# ApiVersions request without error. Plain bash, so a check costs no JVM start.
set -euo pipefail

server=""
while (($#)); do
    case $1 in
        --bootstrap-server) server=$2; shift 2 ;;
        *) shift ;;
    esac
done
[[ -n $server ]] || { echo "usage: $0 --bootstrap-server HOST:PORT" >&2; exit 2; }
host=${server%:*}
port=${server##*:}

# ApiVersions v0: size 12, api_key 18, api_version 0, correlation_id 1, client_id "hc".
exec 3<>"/dev/tcp/$host/$port"
printf '\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x01\x00\x02hc' >&3
# Reply: size (4 bytes), correlation_id (4), error_code (2).
reply=$(timeout 10 head -c 10 <&3 | od -An -tx1 | tr -d ' \n')
exec 3>&-
if [[ $reply != ????????000000010000 ]]; then  # any size, correlation id 1, error code 0
    echo "broker at $server: no ApiVersions answer (got '${reply:-nothing}')" >&2
    exit 1
fi
echo "broker at $server answers ApiVersions"
