FROM alpine:3.19
COPPY app.py /app/
