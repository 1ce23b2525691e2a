# a comment
RUN echo hi
