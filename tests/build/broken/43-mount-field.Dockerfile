FROM scratch
RUN --mount=type=cache,target=/c,rw,nocopy true
