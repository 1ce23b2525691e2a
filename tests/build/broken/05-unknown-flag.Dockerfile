FROM scratch
COPY --xyz=1 a /b
