# A Chorus node image with nothing in it but the `chorus` binary and the shared libraries it
# links (no shell, no package manager, no base image to pull). Build it from the repository
# root with:
#
#   cargo xtask docker-rootfs          # builds target/release/chorus, lays out target/docker-rootfs
#   docker build -t chorus:local .
#
# and run a 3-node cluster with `docker-compose up` (see docker-compose.yml).
FROM scratch
COPY target/docker-rootfs/ /
VOLUME ["/data"]
ENTRYPOINT ["/chorus"]
CMD ["server", "--config", "/etc/chorus/node.toml"]
