"""A local Google Cloud Storage emulator, to try `gs://` work dirs and data without a cloud account (the tests use it).

  python -m hnet.tools.gcs_emulator --port 9023 --bucket demo     # in memory, until Ctrl-C

Runs `gcp-storage-emulator` (`pip install gcp-storage-emulator`, in hnet's `test` extra) on 127.0.0.1 with one
addition: downloads carry the `x-goog-generation` header that GCS sends and that TensorStore (which writes
orbax's arrays) reads to version what it read; without it TensorStore's reads fail with "Malformed
StorageGeneration". Prints the environment that points gcsfs, google-cloud-storage and TensorStore at it.
"""
import argparse
import logging
import sys


def client_env(url: str) -> dict[str, str]:
  """The environment that points the gs:// clients at the emulator at `url`."""
  return {
      "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
      "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore's gcs kvstore (orbax's arrays); read once per process
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: a fixed token instead of Google credentials
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no bucket-type probe (it wants real credentials)
  }


def _add_generation_headers() -> None:
  """Patches the emulator's download handler (before its server module builds the routes from it)."""
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  download = objects.download

  def with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
      return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", 1))

  objects.download = with_generation


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m hnet.tools.gcs_emulator", description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, default=9023)
  parser.add_argument("--bucket", default="demo", help="a bucket to create at start")
  args = parser.parse_args(argv)
  try:
    import gcp_storage_emulator  # pylint: disable=import-outside-toplevel,unused-import  # noqa: F401
  except ImportError:
    sys.exit("gcs_emulator: error: needs gcp-storage-emulator: pip install gcp-storage-emulator (or 'hnet[test]')")
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # every 404 is logged as an error
  _add_generation_headers()
  from gcp_storage_emulator.server import create_server  # pylint: disable=import-outside-toplevel
  server = create_server("127.0.0.1", args.port, in_memory=True, default_bucket=args.bucket)
  url = f"http://127.0.0.1:{args.port}"
  print(f"GCS emulator on {url} (in memory), bucket gs://{args.bucket}; in another shell:", flush=True)
  for k, v in client_env(url).items():
    print(f"  export {k}={v}", flush=True)
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    server.stop()


if __name__ == "__main__":
  main()
