# One image for web (ASGI), worker, beat and the SMTP listener.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 VAR_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY helpdesk ./helpdesk
COPY customers ./customers
COPY conversations ./conversations
COPY channels_app ./channels_app
COPY metrics ./metrics
RUN pip install --no-cache-dir .
COPY . .
RUN SECRET_KEY=build-only python manage.py collectstatic --noinput
EXPOSE 8000 2525
CMD ["uvicorn", "helpdesk.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers",
     "--ws", "websockets-sansio", "--ws-per-message-deflate", "false"]
