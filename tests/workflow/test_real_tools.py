"""Outputs of the real quantifiers, not files written by hand: featureCounts (after subread-align),
STAR (``--quantMode GeneCounts``), htseq-count (on STAR's alignments), salmon, kallisto and RSEM
run on a tiny transcriptome and reads made from the embedded data.

The transcriptome: 300 marker genes (60 per cell type, by mean-CPM ratio) of five types of the
embedded PBMC reference, each with a unique GENCODE v22 Ensembl ID, one random transcript per gene (every fourth gene two), named GENCODE-style
(``ENST|ENSG|...|``). The reads: 30,000 single-end 76 bp reads per sample, drawn without errors
(the first bases of 200-base fragments) from the transcripts in proportion to DAISM samples S1-S3 (``resources/pbmc/daism_bulk.tsv``) times
transcript length. The plain table holds the exact number of reads drawn per gene; every tool's
output must give the plain table's proportions within ``TOLERANCE`` (transcripts are random
sequences, so reads map uniquely and the tools recover the counts up to reads at their edges).
kallisto's ``abundance.h5`` is checked when the installed kallisto writes one (Debian's 0.48 is
built without HDF5; the h5 reader is tested on a file written by the unit tests).

RSEM is given the reads' true transcriptome alignments as a SAM file (no aligner is packaged with
it in Debian); subread-align aligns the reads for featureCounts, and STAR for its own gene counts
and for htseq-count, on a genome of one contig per gene (annotation: ``genes.saf`` / ``genes.gtf``).
A missing tool skips its test with the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.deconvolve import deconvolve_file
from deconflow.io.bulks import read_rna_bulk
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.signature import cell_type_mean_cpm

pytestmark = pytest.mark.workflow

CELL_TYPES = ["B cells", "Monocytes", "NK cells", "T cells CD4 conv", "T cells CD8"]
N_GENES = 300
MIN_OVERLAP = 250
READS_PER_SAMPLE = 30_000
READ_LENGTH = 76
FRAGMENT_LENGTH = 200  # each read is the first 76 bases of a 200-base fragment inside its transcript
SAMPLES = ["S1", "S2", "S3"]
#: largest allowed difference between a tool's proportions and the plain table's
TOLERANCE = 0.005
THREADS = "2"


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        package = {"featureCounts": "subread", "subread-align": "subread", "subread-buildindex": "subread",
                   "rsem-prepare-reference": "rsem", "rsem-calculate-expression": "rsem", "STAR": "rna-star",
                   "htseq-count": "python3-htseq"}
        packages = " ".join(dict.fromkeys(package.get(t, t) for t in missing))
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install -y {packages}")


def fasta_record(name: str, sequence: str) -> str:
    lines = "\n".join(sequence[i:i + 60] for i in range(0, len(sequence), 60))
    return f">{name}\n{lines}\n"


def run(*command, cwd: Path) -> None:
    proc = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{command[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


class Tiny:
    """The transcriptome, reads, plain table and model."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, embedded_resources) -> Tiny:
    out = tmp_path_factory.mktemp("real-tools")
    t = Tiny()
    t.dir = out
    rng = np.random.default_rng(22)
    table = pd.read_csv(embedded_resources / "genes" / "gencode.v22.genes.tsv", sep="\t", dtype=str)
    unique = table.drop_duplicates("symbol", keep=False).drop_duplicates("ensembl_id", keep=False).set_index("symbol")
    reference = ad.read_h5ad(embedded_resources / "pbmc" / "reference.h5ad")
    daism = pd.read_csv(embedded_resources / "pbmc" / "daism_bulk.tsv", sep="\t", index_col=0)[SAMPLES]
    cells = np.flatnonzero(reference.obs["cell_type"].isin(CELL_TYPES).to_numpy())
    candidates = np.flatnonzero(reference.var_names.isin(unique.index) & reference.var_names.isin(daism.index))
    # marker genes: per type the 60 genes with the highest ratio of its mean CPM to the other types' mean
    labels = reference.obs["cell_type"].to_numpy()[cells].astype(str)
    all_means = cell_type_mean_cpm(sp.csr_matrix(reference.X[cells], dtype=np.float32), labels,
                                   reference.var_names.to_numpy().astype(str), CELL_TYPES).iloc[candidates]
    chosen: list[int] = []
    for cell_type in CELL_TYPES:
        others = all_means.drop(columns=cell_type).mean(axis=1)
        ratio = (all_means[cell_type] + 1.0) / (others + 1.0)
        ranked = [i for i in np.argsort(-ratio.to_numpy(), kind="stable") if i not in chosen]
        chosen.extend(ranked[: N_GENES // len(CELL_TYPES)])
    genes = np.sort(candidates[chosen])
    t.symbols = reference.var_names[genes].to_numpy().astype(str)
    t.ensembl = unique.loc[t.symbols, "ensembl_id_version"].to_numpy().astype(str)
    t.gene_table = embedded_resources / "genes" / "gencode.v22.genes.tsv"
    signature = all_means.loc[t.symbols]  # mean CPM over all genes, as build_signature makes it
    t.model = out / "nnls.pt"
    save_checkpoint(NNLSModel(signature).checkpoint(), t.model)

    # transcripts: random sequences, GENCODE-style names
    alphabet = np.array(list("ACGT"))
    transcripts = []  # (name, gene ensembl id, sequence)
    for i, (symbol, gene_id) in enumerate(zip(t.symbols, t.ensembl)):
        for k in range(2 if i % 4 == 0 else 1):
            length = int(rng.integers(600, 1500))
            name = f"ENST{90000000000 + 2 * i + k:011d}.1|{gene_id}|-|-|{symbol}-{201 + k}|{symbol}|{length}|protein_coding|"
            transcripts.append((name, gene_id, "".join(alphabet[rng.integers(0, 4, length)])))
    t.transcripts = transcripts
    t.fasta = out / "transcripts.fa"
    t.fasta.write_text("".join(fasta_record(name, seq) for name, _, seq in transcripts))
    t.tx2gene = out / "tx2gene.tsv"
    t.tx2gene.write_text("".join(f"{name}\t{gene}\n" for name, gene, _ in transcripts))
    # genome: one contig per gene, its transcripts as exons separated by 200 random bases
    genome, saf, gtf = [], ["GeneID\tChr\tStart\tEnd\tStrand"], []
    by_gene: dict[str, list] = {}
    for name, gene, seq in transcripts:
        by_gene.setdefault(gene, []).append((name.split("|")[0], seq))
    t.exon_position = {}
    for n, (gene, seqs) in enumerate(by_gene.items()):
        contig, parts, position = f"contig{n}", [], 0
        for transcript_id, seq in seqs:
            parts.append(seq)
            saf.append(f"{gene}\t{contig}\t{position + 1}\t{position + len(seq)}\t+")
            gtf.append(f"{contig}\ttiny\texon\t{position + 1}\t{position + len(seq)}\t.\t+\t.\t"
                       f"gene_id \"{gene}\"; transcript_id \"{transcript_id}\";")
            position += len(seq)
            spacer = "".join(alphabet[rng.integers(0, 4, 200)])
            parts.append(spacer)
            position += 200
        genome.append(fasta_record(contig, "".join(parts)))
    t.genome = out / "genome.fa"
    t.genome.write_text("".join(genome))
    t.saf = out / "genes.saf"
    t.saf.write_text("\n".join(saf) + "\n")
    t.gtf = out / "genes.gtf"
    t.gtf.write_text("\n".join(gtf) + "\n")

    # reads: per sample, transcript weights = DAISM value of the gene x length (split over its transcripts)
    lengths = np.array([len(seq) for _, _, seq in transcripts])
    gene_of = np.array([gene for _, gene, _ in transcripts])
    n_tx_of_gene = pd.Series(gene_of).map(pd.Series(gene_of).value_counts()).to_numpy()
    value_of_gene = dict(zip(t.ensembl, t.symbols))
    plain = {}
    t.fastq, t.sam = {}, {}
    for sample in SAMPLES:
        expression = np.array([daism.loc[value_of_gene[g], sample] for g in gene_of]) / n_tx_of_gene
        weights = expression * (lengths - FRAGMENT_LENGTH + 1)
        tx_of_read = rng.choice(len(transcripts), size=READS_PER_SAMPLE, p=weights / weights.sum())
        starts = rng.integers(0, lengths[tx_of_read] - FRAGMENT_LENGTH + 1)
        fastq, sam = [], [f"@SQ\tSN:{name}\tLN:{len(seq)}" for name, _, seq in transcripts]
        quality = "I" * READ_LENGTH
        for r, (tx, start) in enumerate(zip(tx_of_read, starts)):
            read = transcripts[tx][2][start:start + READ_LENGTH]
            fastq.append(f"@{sample}_{r}\n{read}\n+\n{quality}\n")
            sam.append(f"{sample}_{r}\t0\t{transcripts[tx][0]}\t{start + 1}\t255\t{READ_LENGTH}M\t*\t0\t0\t{read}\t{quality}")
        t.fastq[sample] = out / f"{sample}.fq"
        t.fastq[sample].write_text("".join(fastq))
        t.sam[sample] = out / f"{sample}.transcriptome.sam"
        t.sam[sample].write_text("@HD\tVN:1.4\tSO:unsorted\n" + "\n".join(sam) + "\n")
        plain[sample] = pd.Series(np.bincount(tx_of_read, minlength=len(transcripts)), index=gene_of).groupby(level=0).sum()
    t.counts = pd.DataFrame(plain).loc[t.ensembl].set_axis(t.symbols)
    t.plain_table = out / "plain.tsv"
    t.counts.rename_axis("gene").to_csv(t.plain_table, sep="\t")
    t.plain = deconvolve_file(t.model, t.plain_table, out / "plain.csv", MIN_OVERLAP)
    t.times = {}
    return t


def check(tiny: Tiny, bulk, name: str, **settings) -> pd.DataFrame:
    """Deconvolve the tool's output and compare with the plain table's proportions and counts."""
    got = deconvolve_file(tiny.model, bulk, tiny.dir / f"{name}.csv", MIN_OVERLAP, gene_table=tiny.gene_table, **settings)
    assert got.index.tolist() == SAMPLES
    difference = float(np.abs(got.to_numpy() - tiny.plain.to_numpy()).max())
    assert difference <= TOLERANCE, f"{name}: proportions differ from the plain table's by {difference:.4f}"
    return got


def test_featurecounts_after_subread_align(tiny):
    need("subread-buildindex", "subread-align", "featureCounts")
    started = time.perf_counter()
    work = tiny.dir / "subread"
    work.mkdir()
    run("subread-buildindex", "-o", "genome", tiny.genome, cwd=work)
    for sample in SAMPLES:
        run("subread-align", "-t", "0", "-T", THREADS, "-i", "genome", "-r", tiny.fastq[sample], "-o", f"{sample}.bam", cwd=work)
    run("featureCounts", "-T", THREADS, "-F", "SAF", "-a", tiny.saf, "-o", "counts.txt", *[f"{s}.bam" for s in SAMPLES], cwd=work)
    bulk, fmt = read_rna_bulk(work / "counts.txt")
    assert fmt == "featurecounts"
    assigned = bulk.loc[tiny.ensembl].to_numpy()
    assert np.abs(assigned - tiny.counts.to_numpy()).sum() <= 0.01 * tiny.counts.to_numpy().sum()
    check(tiny, str(work / "counts.txt"), "featurecounts")
    tiny.times["featurecounts"] = time.perf_counter() - started


@pytest.fixture(scope="module")
def star_outputs(tiny) -> Path:
    """STAR index of the tiny genome with the GTF, and per sample ``{sample}_ReadsPerGene.out.tab``
    (``--quantMode GeneCounts``) and ``{sample}_Aligned.out.sam``."""
    need("STAR")
    started = time.perf_counter()
    work = tiny.dir / "star"
    (work / "index").mkdir(parents=True)
    # --genomeSAindexNbases: min(14, log2(genome length)/2 - 1) for a small genome (STAR's manual)
    n_bases = min(14, int(np.log2(sum(len(seq) for _, _, seq in tiny.transcripts) + 200 * len(tiny.transcripts)) / 2 - 1))
    run("STAR", "--runMode", "genomeGenerate", "--runThreadN", THREADS, "--genomeDir", "index", "--genomeFastaFiles", tiny.genome,
        "--sjdbGTFfile", tiny.gtf, "--sjdbOverhang", str(READ_LENGTH - 1), "--genomeSAindexNbases", str(n_bases), cwd=work)
    for sample in SAMPLES:
        run("STAR", "--runThreadN", THREADS, "--genomeDir", "index", "--readFilesIn", tiny.fastq[sample], "--quantMode", "GeneCounts",
            "--outFileNamePrefix", f"{sample}_", cwd=work)
    tiny.times["STAR (index, align, count)"] = time.perf_counter() - started
    return work


def test_star_reads_per_gene(tiny, star_outputs):
    started = time.perf_counter()
    bulk, fmt = read_rna_bulk(str(star_outputs / "*_ReadsPerGene.out.tab"))
    assert fmt == "star" and bulk.columns.tolist() == SAMPLES
    # reads come from the transcripts' + strand: the unstranded and forward columns hold them all
    assigned = bulk.loc[tiny.ensembl].to_numpy()
    assert np.abs(assigned - tiny.counts.to_numpy()).sum() <= 0.01 * tiny.counts.to_numpy().sum()
    check(tiny, str(star_outputs / "*_ReadsPerGene.out.tab"), "star_chosen")
    check(tiny, str(star_outputs / "*_ReadsPerGene.out.tab"), "star_forward", strand="forward")
    tiny.times["STAR (reading)"] = time.perf_counter() - started


def test_htseq_count_on_star_alignments(tiny, star_outputs):
    need("htseq-count")
    started = time.perf_counter()
    work = tiny.dir / "htseq"
    work.mkdir()
    for sample in SAMPLES:
        proc = subprocess.run(["htseq-count", "-f", "sam", "-s", "yes", "-t", "exon", "-i", "gene_id",
                               str(star_outputs / f"{sample}_Aligned.out.sam"), str(tiny.gtf)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (work / f"{sample}.counts.txt").write_text(proc.stdout)
    bulk, fmt = read_rna_bulk(str(work / "*.counts.txt"))
    assert fmt == "htseq" and bulk.columns.tolist() == SAMPLES  # no header: samples named after the files
    assert not any(g.startswith("__") for g in bulk.index)  # __no_feature ... summary rows dropped
    check(tiny, str(work / "*.counts.txt"), "htseq")
    tiny.times["htseq-count"] = time.perf_counter() - started


@pytest.fixture(scope="module")
def salmon_outputs(tiny) -> Path:
    need("salmon")
    work = tiny.dir / "salmon"
    work.mkdir()
    run("salmon", "index", "-t", tiny.fasta, "-i", "index", "-k", "25", "-p", THREADS, cwd=work)
    for sample in SAMPLES:
        run("salmon", "quant", "-i", "index", "-l", "A", "-r", tiny.fastq[sample], "-p", THREADS, "-g", tiny.tx2gene,
            "--validateMappings", "-o", sample, cwd=work)
    return work


def test_salmon_quant_sf_and_quant_genes_sf(tiny, salmon_outputs):
    started = time.perf_counter()
    check(tiny, str(salmon_outputs / "*" / "quant.sf"), "salmon_transcripts")  # GENCODE-style names -> genes
    check(tiny, str(salmon_outputs / "*" / "quant.genes.sf"), "salmon_genes")
    check(tiny, str(salmon_outputs), "salmon_folder")
    tiny.times["salmon (reading)"] = time.perf_counter() - started


def test_kallisto_abundance_tsv_and_h5(tiny):
    need("kallisto")
    started = time.perf_counter()
    work = tiny.dir / "kallisto"
    work.mkdir()
    run("kallisto", "index", "-i", "index", tiny.fasta, cwd=work)
    for sample in SAMPLES:
        run("kallisto", "quant", "-i", "index", "-o", sample, "--single", "-l", str(FRAGMENT_LENGTH), "-s", "20", "-t", THREADS,
            tiny.fastq[sample], cwd=work)
    check(tiny, str(work / "*" / "abundance.tsv"), "kallisto_tsv")
    if (work / "S1" / "abundance.h5").exists():  # Debian's kallisto 0.48 is built without HDF5 and writes none
        check(tiny, str(work / "*" / "abundance.h5"), "kallisto_h5")
    tiny.times["kallisto"] = time.perf_counter() - started


def test_rsem_genes_results(tiny):
    need("rsem-prepare-reference", "rsem-calculate-expression")
    started = time.perf_counter()
    work = tiny.dir / "rsem"
    work.mkdir()
    mapping = work / "map.txt"
    mapping.write_text("".join(f"{gene}\t{name}\n" for name, gene, _ in tiny.transcripts))
    run("rsem-prepare-reference", "--transcript-to-gene-map", mapping, tiny.fasta, "ref", cwd=work)
    for sample in SAMPLES:
        run("rsem-calculate-expression", "--alignments", "-p", THREADS, "--no-bam-output", tiny.sam[sample], "ref", sample, cwd=work)
    got = check(tiny, str(work / "*.genes.results"), "rsem")
    assert got.index.tolist() == SAMPLES
    tiny.times["rsem"] = time.perf_counter() - started
