FROM scratch
COPY file <<EOF
content
EOF
