FROM scratch
HEALTHCHECK --interval=abc CMD true
