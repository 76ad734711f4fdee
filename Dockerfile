# stratafs in a container. FUSE needs the host's /dev/fuse and the right to mount:
#   docker build -t stratafs .
#   docker run --rm -it --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor:unconfined \
#     -v /var/lib/stratafs:/var/lib/stratafs stratafs daemon
FROM node:20-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 attr \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/stratafs
COPY package.json package-lock.json .npmrc ./
COPY native ./native
COPY scripts ./scripts
COPY tsconfig.json ./
COPY src ./src
COPY bin ./bin
RUN bash scripts/setup.sh && npm prune --omit=dev
ENV PATH=/opt/stratafs/bin:$PATH
VOLUME /var/lib/stratafs
ENTRYPOINT ["stratafs"]
CMD ["daemon"]
