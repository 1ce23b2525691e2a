FROM scratch
ADD --from=build a /b
