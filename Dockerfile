FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATON_DATA_DIR=/data

WORKDIR /app

# Dependencies get their own layer, keyed only on these two files, so editing
# Baton's source does not reinstall temporalio and friends on every build.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project'].get('dependencies', [])))" > /tmp/deps.txt \
    && if [ -s /tmp/deps.txt ]; then pip install --no-cache-dir -c constraints.txt -r /tmp/deps.txt; fi \
    && rm /tmp/deps.txt

COPY baton/ baton/
COPY workflows/ workflows/
COPY activities/ activities/
COPY systems/ systems/
COPY samples/ samples/
COPY worker.py starter.py baton.toml directory.toml routing.toml ./
RUN pip install --no-cache-dir -c constraints.txt .

# /data is created here, owned by the runtime user, because Docker seeds a new
# named volume with the ownership of the image directory it is mounted over;
# otherwise the volume would be root-owned and unwritable by the worker.
RUN useradd --create-home --uid 10001 --user-group baton \
    && mkdir -p /data \
    && chown baton:baton /data
USER baton

VOLUME ["/data"]

CMD ["python", "worker.py"]
