FROM scratch
COPY --link=maybe a /b
