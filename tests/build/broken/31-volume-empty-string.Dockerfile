FROM scratch
VOLUME ["/data", ""]
