FROM scratch
LABEL a=b c
