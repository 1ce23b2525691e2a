FROM scratch
ENV A=1 =2
