// Trains the DALS paper's four-layer MLP (784-256-256-256-10, ReLU; torch_layerlr/models/vision.py) on
// Fashion-MNIST with a torch_layerlr optimizer, printing a progress line, then per epoch the training loss and the
// test loss and accuracy. The data are the IDX files (decompressed) read by LibTorch's MNIST dataset reader.
//
//   train_fashion_mnist --optimizer lamb|dals|lars|sgd [--epochs 3] [--batch-size 128] [--seed 0]
//                       [--lr LR] [--data DIR] [--threads N]
// The hyperparameters are those of the Python training comparison (torch_layerlr/train/zoo.py), but LAMB's lr is
// 4e-3, and LAMB, LARS and SGD follow a cosine decay to 0 over the run (DALS has its own warmup + cosine).
#include <torch/torch.h>
#include <torch_layerlr/optim.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace optim = torch_layerlr::optim;
using Clock = std::chrono::steady_clock;

struct MLPImpl : torch::nn::Module {
  torch::nn::Linear layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  explicit MLPImpl(int64_t in = 784, int64_t hidden = 256, int64_t classes = 10) {
    // Registered in forward order: DALS takes the children's order as the layers' depth order.
    layer1 = register_module("layer1", torch::nn::Linear(in, hidden));
    layer2 = register_module("layer2", torch::nn::Linear(hidden, hidden));
    layer3 = register_module("layer3", torch::nn::Linear(hidden, hidden));
    layer4 = register_module("layer4", torch::nn::Linear(hidden, classes));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x.flatten(1);
    x = torch::relu(layer1(x));
    x = torch::relu(layer2(x));
    x = torch::relu(layer3(x));
    return layer4(x);
  }
};
TORCH_MODULE(MLP);

struct Args {
  std::string optimizer = "dals";
  int64_t epochs = 3, batch_size = 128, seed = 0, threads = 0;
  double lr = 0.0;  // 0: the optimizer's default below
  std::string data = "/usr/share/datasets/fashion-mnist";
};

Args parse(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("LAYERLR_DATA")) a.data = env;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + key);
    const std::string value = argv[++i];
    if (key == "--optimizer") a.optimizer = value;
    else if (key == "--epochs") a.epochs = std::stoll(value);
    else if (key == "--batch-size") a.batch_size = std::stoll(value);
    else if (key == "--seed") a.seed = std::stoll(value);
    else if (key == "--data") a.data = value;
    else if (key == "--threads") a.threads = std::stoll(value);
    else if (key == "--lr") a.lr = std::stod(value);
    else throw std::invalid_argument("unknown argument " + key);
  }
  if (a.epochs < 1 || a.batch_size < 1) throw std::invalid_argument("--epochs and --batch-size must be >= 1");
  return a;
}

std::unique_ptr<optim::FusedOptimizer> make_optimizer(const std::string& name, MLP& model, int64_t total_steps,
                                                      double lr) {
  constexpr double wd = 5e-4;  // the SGD-family weight decay of the comparison
  auto rate = [lr](double fallback) { return lr > 0 ? lr : fallback; };
  if (name == "lamb") {
    return std::make_unique<optim::LAMB>(model->parameters(), optim::LAMBOptions(rate(4e-3)).weight_decay(0.01));
  }
  if (name == "dals") {
    return std::make_unique<optim::DALS>(
        *model, optim::DALSOptions("dals").lr(rate(0.03)).weight_decay(wd).total_steps(total_steps));
  }
  if (name == "lars") {
    return std::make_unique<optim::LARS>(
        model->parameters(), optim::LARSOptions(rate(0.03)).momentum(0.9).weight_decay(wd).trust_coefficient(0.02));
  }
  if (name == "sgd") {
    return std::make_unique<optim::LayerwiseSGD>(
        model->parameters(), optim::LayerwiseSGDOptions(rate(0.01)).momentum(0.9).weight_decay(wd));
  }
  throw std::invalid_argument("--optimizer must be lamb, dals, lars or sgd, got " + name);
}

// Cosine decay of every group's lr from base_lr to 0 over the run (through get_lr/set_lr, as LR schedulers do).
void set_cosine_lr(torch::optim::Optimizer& optimizer, double base_lr, int64_t step, int64_t total_steps) {
  const double lr = 0.5 * base_lr * (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total_steps)));
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

void progress(int64_t epoch, int64_t epochs, int64_t done, int64_t total, double loss) {
  constexpr int width = 30;
  const int filled = static_cast<int>(width * done / total);
  std::printf("\repoch %lld/%lld [%s%s] %lld/%lld loss %.4f", static_cast<long long>(epoch),
              static_cast<long long>(epochs), std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
              static_cast<long long>(done), static_cast<long long>(total), loss);
  std::fflush(stdout);
}

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  torch::manual_seed(args.seed);
  if (args.threads > 0) torch::set_num_threads(static_cast<int>(args.threads));

  using torch::data::datasets::MNIST;
  auto train = MNIST(args.data, MNIST::Mode::kTrain);
  auto test = MNIST(args.data, MNIST::Mode::kTest);
  // Normalize with the training set's pixel mean and std (as the Python comparison's channel_stats).
  const torch::Tensor mean = train.images().mean(), stdev = train.images().std();
  const torch::Tensor train_x = (train.images() - mean) / stdev, train_y = train.targets();
  const torch::Tensor test_x = (test.images() - mean) / stdev, test_y = test.targets();
  const int64_t n = train_x.size(0);
  const int64_t steps_per_epoch = (n + args.batch_size - 1) / args.batch_size;

  MLP model;
  auto optimizer = make_optimizer(args.optimizer, model, args.epochs * steps_per_epoch, args.lr);
  auto* dals = dynamic_cast<optim::DALS*>(optimizer.get());  // DALS runs its own warmup + cosine schedule
  const double base_lr = optimizer->param_groups()[0].options().get_lr();
  const int64_t total_steps = args.epochs * steps_per_epoch;
  int64_t step = 0;
  std::printf("%s on Fashion-MNIST: %lld train / %lld test images, %lld steps per epoch\n", args.optimizer.c_str(),
              static_cast<long long>(n), static_cast<long long>(test_x.size(0)),
              static_cast<long long>(steps_per_epoch));

  double accuracy = 0.0;
  for (int64_t epoch = 1; epoch <= args.epochs; ++epoch) {
    model->train();
    const auto start = Clock::now();
    double step_seconds = 0.0, loss_sum = 0.0;
    const torch::Tensor order = torch::randperm(n, torch::kLong);
    for (int64_t b = 0; b < steps_per_epoch; ++b) {
      const torch::Tensor idx = order.slice(0, b * args.batch_size, std::min(n, (b + 1) * args.batch_size));
      optimizer->zero_grad();
      const torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(train_x.index_select(0, idx)),
                                                                      train_y.index_select(0, idx));
      loss.backward();
      const auto step_start = Clock::now();
      if (dals) {
        dals->update_phase(loss);  // DALS's loss-phase detector sees every training loss
      } else {
        set_cosine_lr(*optimizer, base_lr, step++, total_steps);
      }
      optimizer->step();
      step_seconds += std::chrono::duration<double>(Clock::now() - step_start).count();
      loss_sum += loss.item<double>();
      if ((b + 1) % 20 == 0 || b + 1 == steps_per_epoch) progress(epoch, args.epochs, b + 1, steps_per_epoch, loss_sum / (b + 1));
    }
    const double epoch_seconds = std::chrono::duration<double>(Clock::now() - start).count();

    model->eval();
    torch::NoGradGuard no_grad;
    double test_loss = 0.0;
    int64_t correct = 0;
    for (int64_t i = 0; i < test_x.size(0); i += 1000) {
      const torch::Tensor logits = model->forward(test_x.slice(0, i, i + 1000));
      const torch::Tensor y = test_y.slice(0, i, i + 1000);
      test_loss += torch::nn::functional::cross_entropy(
                       logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                       .item<double>();
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
    }
    accuracy = 100.0 * static_cast<double>(correct) / static_cast<double>(test_x.size(0));
    std::printf("\nepoch %lld: train loss %.4f  test loss %.4f  test accuracy %.2f%%  (%.1f s, optimizer steps %.2f s)\n",
                static_cast<long long>(epoch), loss_sum / steps_per_epoch, test_loss / test_x.size(0), accuracy,
                epoch_seconds, step_seconds);
    std::printf("RESULT epoch=%lld epoch_seconds=%.4f step_seconds=%.4f test_accuracy=%.4f\n",
                static_cast<long long>(epoch), epoch_seconds, step_seconds, accuracy);
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
