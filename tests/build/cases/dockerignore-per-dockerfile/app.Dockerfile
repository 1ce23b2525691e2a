FROM bb:1
COPY . /ctx/
