FROM scratch
ONBUILD FROM alpine
