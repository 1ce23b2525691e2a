FROM scratch
RUN set -e && \
  cat <<EOF > /x
never closed
