ARG =x
FROM scratch
