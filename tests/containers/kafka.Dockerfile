# An Apache Kafka broker image on machines without an image registry: Debian's Java 17 on the
# local bookworm root file system (setup.sh) and the Kafka jars Maven resolved on the host.
# It reads the same environment as apache/kafka (KAFKA_* settings, CLUSTER_ID) and has the
# same health-check path, so docker-compose.yml runs with either image.
#   podman build -f tests/containers/kafka.Dockerfile -t localhost/streamserve-kafka:4.1.1 CONTEXT
# CONTEXT holds jars/ (~/.cache/streamserve/kafka-*/jars) and the files of tests/containers/kafka/.
ARG BASE_IMAGE=localhost/debian:bookworm-min
FROM ${BASE_IMAGE}

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/kafka/config /var/lib/kafka/data

ENV KAFKA_HEAP_OPTS="-Xmx512m -Xms512m" \
    KAFKA_JVM_PERFORMANCE_OPTS="-XX:+UseSerialGC -Djava.awt.headless=true"

COPY jars /opt/kafka/libs
COPY log4j2.properties /opt/kafka/config/log4j2.properties
COPY run /etc/kafka/docker/run
COPY kafka-broker-api-versions.sh /opt/kafka/bin/kafka-broker-api-versions.sh

VOLUME /var/lib/kafka/data
EXPOSE 9092
ENTRYPOINT ["/etc/kafka/docker/run"]
