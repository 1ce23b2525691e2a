FROM scratch
USER   
