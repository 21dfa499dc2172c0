// Our promise runner: the contract of slapos.core's runpromises.py (node-extras.md §4.9),
// for releases whose slapos.core egg has none (older than 1.7). It runs with the release's
// Python (`python -c RUNNER <options>`, no file to write) and drives the promise launcher of
// the release's own slapos.core, found on the import path the first plugin names, so the
// plugins meet the framework they were written for. Python 2.7 and 3.
//
// Exit status: 0 every promise passed; 2 a promise failed (its text on stderr, also when the
// release's Python cannot import the framework: the plugins cannot run); 1 anything else.

export const RUNNER = `
import argparse, ast, logging, os, sys

def fail(code, text):
    sys.stderr.write(text)
    sys.exit(code)

def import_path(plugin):
    # the first top-level assignment of the plugin must be sys.path[0:0] = [<strings>]
    with open(plugin) as f:
        tree = ast.parse(f.read(), plugin)
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        target = node.targets[0] if len(node.targets) == 1 else None
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute)
                and target.value.attr == 'path' and isinstance(target.value.value, ast.Name)
                and target.value.value.id == 'sys'):
            value = ast.literal_eval(node.value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        break
    fail(1, '%s: its first assignment is not sys.path[0:0] = [...]: cannot find the promise framework' % plugin)

def main():
    parser = argparse.ArgumentParser(prog='slapos-promise-runner')
    for name in ('promise-folder', 'legacy-promise-folder', 'partition-folder', 'log-folder',
                 'master-url', 'partition-cert', 'partition-key', 'partition-id', 'computer-id'):
        parser.add_argument('--' + name, default='')
    parser.add_argument('--promise-timeout', type=int, default=20)
    for flag in ('force', 'check-anomaly', 'debug'):
        parser.add_argument('--' + flag, action='store_true')
    args = parser.parse_args()
    plugins = [n for n in os.listdir(args.promise_folder) if n.endswith('.py') and not n.startswith('__init__')]
    if not plugins:
        fail(1, 'no promise plugin in %s' % args.promise_folder)
    sys.path[0:0] = import_path(os.path.join(args.promise_folder, plugins[0]))
    try:
        from slapos.grid.promise import PromiseLauncher, PromiseError
    except ImportError as e:
        fail(2, "Promise %r failed with output: the software release's Python cannot import slapos.core's "
                "promise framework (slapos.grid.promise) from the paths the plugin names: %s" % (plugins[0], e))
    logging.basicConfig(stream=sys.stdout, level=logging.DEBUG if args.debug else logging.INFO,
                        format='%(asctime)s %(name)-18s[%(process)d] %(levelname)-5s %(message)s')
    config = {}
    for key, value in vars(args).items():
        # empty means unset, as the original runner reads it
        config[key.replace('_', '-')] = None if value == '' else value
    try:
        PromiseLauncher(config=config, logger=logging.getLogger('slapos')).run()
    except PromiseError as e:
        fail(2, str(e))
    except Exception as e:
        fail(1, '%s: %s' % (type(e).__name__, e))

main()
`
