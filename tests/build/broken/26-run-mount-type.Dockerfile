FROM scratch
RUN --mount=type=volume,target=/x true
