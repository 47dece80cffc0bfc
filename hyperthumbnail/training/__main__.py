"""`python -m hyperthumbnail.training ARGS` = `hyperthumbnail train ARGS`, importing nothing but the
training code (for lean GPU boxes that lack the serving/client packages)."""
import argparse
import sys

from ..cli import train

parser = argparse.ArgumentParser(prog="python -m hyperthumbnail.training")
sub = parser.add_subparsers(dest="command", required=True)
train.register(sub)
args = parser.parse_args(["train", *sys.argv[1:]])
sys.exit(args.func(args))
