FROM scratch
HEALTHCHECK --timeout=10us CMD true
