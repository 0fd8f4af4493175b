"""The core's built-in data sets, registered through the same hook as any plugin's.

Factories and configs are named by reference (``"module:Name"``) so that listing them imports nothing heavy.
"""

from __future__ import annotations

from t2i.hookspecs import hookimpl


@hookimpl
def t2i_register_datasets(register):
    register("shapes", "t2i.data.shapes:Shapes", config="t2i.data.shapes:ShapesConfig",
             help="Coloured shapes with exact captions, from a seed")
    register("folder", "t2i.data.folder:Folder", config="t2i.data.folder:FolderConfig",
             help="Your images with sidecar .txt captions, a captions.jsonl / .csv manifest or a Hub metadata.jsonl / .csv (--data folder:PATH)")
    register("hf", "t2i.data.hf:Hf", config="t2i.data.hf:HfConfig",
             help="A Hugging Face datasets folder (save_to_disk) or imagefolder, read offline (--data hf:PATH)")
    register("cub", "t2i.data.stackgan:Cub", config="t2i.data.stackgan:CubConfig",
             help="CUB-200-2011 birds in the StackGAN/AttnGAN layout, bird crop, class-disjoint splits (--data cub:PATH)")
    register("oxford", "t2i.data.stackgan:Oxford", config="t2i.data.stackgan:OxfordConfig",
             help="Oxford-102 flowers in the StackGAN layout, class-disjoint splits (--data oxford:PATH)")
    register("coco", "t2i.data.coco:Coco", config="t2i.data.coco:CocoConfig",
             help="MS-COCO 2014/2017 captions; train = train set, test = val set (--data coco:PATH)")
