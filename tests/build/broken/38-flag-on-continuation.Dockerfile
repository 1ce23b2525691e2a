FROM scratch
COPY --chown=1:1 \
    --bogus=2 \
    a /b
