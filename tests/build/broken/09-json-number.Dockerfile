FROM scratch
CMD ["echo", 1]
