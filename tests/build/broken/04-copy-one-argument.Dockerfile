FROM scratch
COPY onlysource
