FROM scratch
RUN <<EOF
echo hi
EO
