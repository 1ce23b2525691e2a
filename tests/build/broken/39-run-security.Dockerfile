FROM scratch
RUN --security=root true
